//! The mineru-operator controller.
