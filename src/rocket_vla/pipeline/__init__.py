"""The stages the demo and the study both run: collection, the teacher-feature cache, one
training run, parallel processes; and the configuration they share."""
