"""memlora.distill"""
