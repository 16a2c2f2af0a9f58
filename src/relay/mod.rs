pub mod wake;
