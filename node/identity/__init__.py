"""hearthmesh.node.identity"""
