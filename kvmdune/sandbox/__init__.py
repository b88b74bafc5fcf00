"""kvmdune.sandbox"""
