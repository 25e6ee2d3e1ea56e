"""T5X gin files (a package so gin can resolve `include 'gin_configs/t5x/...'` via sys.path)."""
