"""hearthmesh.node.mesh"""
