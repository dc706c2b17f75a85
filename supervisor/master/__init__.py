"""supervisor/master"""
