//! The REST API: Web3Signer signing (`sign`), health and key reload (`health`), KeyStake's
//! operator routes (`operator`) and the Ethereum keymanager API (`keymanager`).
#![forbid(unsafe_code)]

pub mod body;
pub mod health;
pub mod keymanager;
pub mod operator;
pub mod sign;
