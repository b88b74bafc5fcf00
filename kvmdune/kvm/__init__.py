"""kvmdune.kvm"""
