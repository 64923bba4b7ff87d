"""animate124.metrics"""
