"""animate124.fields"""
