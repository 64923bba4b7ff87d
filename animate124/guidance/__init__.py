"""animate124.guidance"""
