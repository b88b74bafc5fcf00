"""kvmdune.bench"""
