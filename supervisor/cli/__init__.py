"""supervisor/cli"""
