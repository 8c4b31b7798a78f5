"""The worker side: claim trials, train Keras models, write results back."""
