//! Build context hashing (placeholder while the scheduler is reviewed).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("placeholder")]
    Placeholder,
}
