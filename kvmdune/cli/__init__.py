"""kvmdune.cli"""
