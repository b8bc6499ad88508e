//! SFTP store over pooled SSH connections (being written).
