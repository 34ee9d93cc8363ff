"""Scoring of every task's output: ASR, speaker verification, VAD, diarization, classification."""
