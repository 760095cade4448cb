"""hearthmesh.node.rooms"""
