"""bots/actor"""
