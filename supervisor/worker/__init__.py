"""supervisor/worker"""
