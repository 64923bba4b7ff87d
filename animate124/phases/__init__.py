"""animate124.phases"""
