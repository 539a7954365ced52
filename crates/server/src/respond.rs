//! Success envelopes of the query protocol.

use keyward_protocol::xml::XmlWriter;

/// `<{action}Response xmlns=ns><{action}Result>…</{action}Result><ResponseMetadata>…</ResponseMetadata></{action}Response>`;
/// `result` is `None` for operations without output (no `Result` element, as AWS).
pub(crate) fn envelope(
    action: &str,
    ns: &str,
    request_id: &str,
    result: Option<&dyn Fn(&mut XmlWriter)>,
) -> String {
    let mut w = XmlWriter::new();
    w.open2_ns(action, "Response", ns);
    if let Some(f) = result {
        w.open2(action, "Result");
        f(&mut w);
        w.close2(action, "Result");
    }
    w.open("ResponseMetadata")
        .elem("RequestId", request_id)
        .close("ResponseMetadata")
        .close2(action, "Response");
    w.finish()
}

#[cfg(test)]
mod tests {
    #[test]
    fn envelope_shapes() {
        let s = super::envelope("DeleteUser", "urn:ns", "r1", None);
        assert_eq!(s, "<DeleteUserResponse xmlns=\"urn:ns\"><ResponseMetadata><RequestId>r1</RequestId></ResponseMetadata></DeleteUserResponse>");
        let s = super::envelope(
            "GetX",
            "urn:ns",
            "r1",
            Some(&|w| {
                w.elem("A", "1");
            }),
        );
        assert!(s.contains("<GetXResult><A>1</A></GetXResult><ResponseMetadata>"));
    }
}
