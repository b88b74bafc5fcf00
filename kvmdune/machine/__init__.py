"""kvmdune.machine"""
