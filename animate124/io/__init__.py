"""animate124.io"""
