"""IBL data for NEDS: ONE loading, preprocessing, synthetic ALF sessions and the HF dataset."""
