"""hearthmesh.node.media"""
