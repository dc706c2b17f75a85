"""supervisor/embedded"""
