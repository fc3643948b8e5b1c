"""Episode storage (LIBERO/robomimic HDF5), training datasets, normalisation, augmentation."""
