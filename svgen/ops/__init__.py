"""svgen.ops"""
