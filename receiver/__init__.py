"""Tencent Cloud media callback receiver."""
