//! Reading a server's whole keyspace, for comparing it with a model.

use std::collections::BTreeMap;

/// Every key and value on the server, via `SCAN` and `MGET`.
///
/// Call it with no concurrent writers: a key deleted between the two steps
/// makes it panic, as does a key that `SCAN` returns twice.
pub fn dump(con: &mut redis::Connection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(chunk).query(con).expect("MGET");
        for (key, value) in chunk.iter().zip(values) {
            let value = value.unwrap_or_else(|| {
                panic!(
                    "SCAN returned {:?} but MGET finds no value",
                    String::from_utf8_lossy(key)
                )
            });
            let previous = out.insert(key.clone(), value);
            assert!(
                previous.is_none(),
                "SCAN returned {:?} twice",
                String::from_utf8_lossy(key)
            );
        }
    }
    out
}

/// [`dump`] with keys and values as (lossy) UTF-8 strings.
pub fn dump_strings(con: &mut redis::Connection) -> BTreeMap<String, String> {
    dump(con)
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            )
        })
        .collect()
}
