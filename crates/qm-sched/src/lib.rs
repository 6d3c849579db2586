//! quartermaster allocation framework.
