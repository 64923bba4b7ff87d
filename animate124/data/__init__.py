"""animate124.data"""
