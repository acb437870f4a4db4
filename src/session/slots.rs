//! Redis Cluster key slots: which of the 16384 slots a key lives in, and the check that every
//! command or script the redis store sends touches one slot only.
//!
//! A cluster refuses a multi-key command whose keys hash to different slots (`CROSSSLOT`);
//! one Redis node runs it happily. The redis store runs this check on every command in debug
//! builds, on one node too, so the single-node tests already fail where a cluster would.

use redis::{Arg, Cmd, ErrorKind, RedisError, ServerErrorKind};

/// Redis Cluster's number of hash slots.
pub const SLOTS: u16 = 16_384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0): Redis Cluster's key hash.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// The part of a key that picks its slot: what lies between the first `{` and the next `}`
/// when that is not empty (the hash tag), else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key)
}

/// The slot a key lives in.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The keys of `cmd` as Redis Cluster reads them. Commands that name several keys are listed
/// here; any other command counts as keyless or single-key, which no slot can split.
pub fn keys_of(cmd: &Cmd) -> Vec<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(bytes) => Some(bytes),
            // A cursor (`SCAN`) is never a key.
            _ => None,
        })
        .collect();
    let Some((name, rest)) = args.split_first() else {
        return Vec::new();
    };
    let name = name.to_ascii_uppercase();
    match name.as_slice() {
        // `EVAL script numkeys key... arg...`
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let count = rest
                .get(1)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            rest.iter().skip(2).take(count).copied().collect()
        }
        b"MGET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"WATCH" | b"SINTER" | b"SUNION"
        | b"SDIFF" | b"SINTERSTORE" | b"SUNIONSTORE" | b"SDIFFSTORE" | b"PFCOUNT" | b"PFMERGE"
        | b"RENAME" | b"RENAMENX" | b"COPY" | b"LMOVE" | b"RPOPLPUSH" => rest.to_vec(),
        b"SMOVE" => rest.iter().take(2).copied().collect(),
        b"MSET" | b"MSETNX" => rest.iter().step_by(2).copied().collect(),
        _ => rest.first().copied().into_iter().collect(),
    }
}

/// `Ok` when every key of `cmds` lives in one slot; else the error a cluster would answer.
pub fn check<'a>(cmds: impl IntoIterator<Item = &'a Cmd>) -> Result<(), RedisError> {
    let mut first: Option<(u16, String)> = None;
    for cmd in cmds {
        for key in keys_of(cmd) {
            let slot = slot(key);
            match &first {
                None => first = Some((slot, String::from_utf8_lossy(key).into_owned())),
                Some((s, _)) if *s == slot => {}
                Some((s, k)) => {
                    return Err(RedisError::from((
                        ErrorKind::Server(ServerErrorKind::CrossSlot),
                        "keys in one request hash to different slots",
                        format!(
                            "{k} (slot {s}) and {} (slot {slot})",
                            String::from_utf8_lossy(key)
                        ),
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_crc16_xmodem() {
        // The check value of CRC-16/XMODEM, and the example of the cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12_182);
    }

    #[test]
    fn hash_tags_are_honoured_as_the_cluster_specification_says() {
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
    }

    #[test]
    fn the_keys_of_a_script_are_those_after_its_key_count() {
        let mut eval = redis::cmd("EVAL");
        eval.arg("return 1")
            .arg(2)
            .arg("a")
            .arg("b")
            .arg("not-a-key");
        assert_eq!(keys_of(&eval), [b"a".as_slice(), b"b"]);
        let mut mset = redis::cmd("MSET");
        mset.arg("k1").arg("v1").arg("k2").arg("v2");
        assert_eq!(keys_of(&mset), [b"k1".as_slice(), b"k2"]);
        let mut get = redis::cmd("GET");
        get.arg("k");
        assert_eq!(keys_of(&get), [b"k".as_slice()]);
        assert!(keys_of(&redis::cmd("PING")).is_empty());
    }

    #[test]
    fn keys_on_different_slots_fail_the_check_and_tagged_ones_pass() {
        let mut crossing = redis::cmd("EVAL");
        crossing.arg("").arg(2).arg("p:session:abc").arg("p:user:1");
        let err = check([&crossing]).err().map(|e| e.to_string());
        assert!(
            err.is_some_and(|e| e.contains("slot")),
            "CROSSSLOT expected"
        );
        let mut tagged = redis::cmd("MGET");
        tagged.arg("{p:u:1}:a").arg("{p:u:1}:b");
        assert!(check([&tagged]).is_ok());
        // A pipeline is one request too: its commands must share a slot.
        let (mut one, mut other) = (redis::cmd("GET"), redis::cmd("GET"));
        one.arg("p:session:abc");
        other.arg("p:user:1");
        assert!(check([&one, &other]).is_err());
        assert!(check([&one, &one]).is_ok());
    }
}
