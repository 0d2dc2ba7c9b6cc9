"""svgen.metrics"""
