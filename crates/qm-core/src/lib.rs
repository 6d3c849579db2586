//! quartermaster domain model.
