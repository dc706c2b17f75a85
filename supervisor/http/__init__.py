"""supervisor/http"""
