"""kvmdune.dune"""
