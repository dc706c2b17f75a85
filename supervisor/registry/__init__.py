"""supervisor/registry"""
