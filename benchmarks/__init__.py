"""memlora.bench"""
