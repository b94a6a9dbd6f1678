//! placeholder: the inventory (being written).
