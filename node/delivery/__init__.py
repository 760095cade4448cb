"""hearthmesh.node.delivery"""
