"""svgen.preprocessing"""
