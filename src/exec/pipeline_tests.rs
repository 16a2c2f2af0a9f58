//! Tests of the pipeline seam.
