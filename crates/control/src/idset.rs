//! Tests of the compact id-set encoding (`synod_types::idset`) as the
//! control plane uses it.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use synod_types::CmdId;

    fn id(epoch: u64, seq: u64, origin: u16) -> CmdId {
        CmdId { epoch, seq, origin }
    }

    #[test]
    fn a_seal_report_of_a_million_ids_fits_one_control_command() {
        let known: BTreeSet<CmdId> = (0..3)
            .flat_map(|o| (0..350_000).map(move |s| id(0, s, o)))
            .collect();
        let cmd = crate::ControlCommand::SealReport {
            epoch: 0,
            from: 1,
            known: known.clone(),
        };
        let bytes = postcard::to_allocvec(&cmd).unwrap();
        assert!(
            bytes.len() < crate::CONTROL_COMMAND_MAX_BYTES / 1000,
            "{} bytes",
            bytes.len()
        );
        let back: crate::ControlCommand = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, cmd);
    }
}
