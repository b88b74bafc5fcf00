"""kvmdune.memory"""
