"""kvmdune.linux"""
