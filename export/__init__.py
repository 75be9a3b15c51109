"""memlora.export"""
