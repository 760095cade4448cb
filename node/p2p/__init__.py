"""hearthmesh.node.p2p"""
