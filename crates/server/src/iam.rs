//! IAM operations: users, their tags, access keys and account aliases.

use crate::app::App;
use crate::authz::authorize_iam;
use crate::caller::Caller;
use crate::respond::envelope;
use keyward_protocol::time::iso8601;
use keyward_protocol::validate::{self, Validator};
use keyward_protocol::xml::XmlWriter;
use keyward_protocol::{ApiError, Params, IAM_NS};
use keyward_store::{AccessKey, KeyStatus, Tag, User};

/// Every IAM action keyward implements.
pub(crate) const ACTIONS: &[&str] = &[
    "CreateUser",
    "GetUser",
    "ListUsers",
    "UpdateUser",
    "DeleteUser",
    "TagUser",
    "UntagUser",
    "ListUserTags",
    "CreateAccessKey",
    "ListAccessKeys",
    "UpdateAccessKey",
    "DeleteAccessKey",
    "GetAccessKeyLastUsed",
    "CreateAccountAlias",
    "ListAccountAliases",
    "DeleteAccountAlias",
];

/// A user as IAM's newer actions (CreateUser, the tagging ones) name it in a denial: its ARN.
fn user_resource(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

/// A user as IAM's older actions (GetUser, UpdateUser, DeleteUser and the access-key ones) name
/// it in a denial: `user NAME`, as real AccessDenied messages quoted in public reports show
/// ("... is not authorized to perform: iam:CreateAccessKey on resource: user mella-admin because
/// no identity-based policy allows ...").
fn user_named(name: &str) -> String {
    format!("user {name}")
}

fn write_user(w: &mut XmlWriter, u: &User, with_tags: bool) {
    w.open("User");
    write_user_fields(w, u, with_tags);
    w.close("User");
}

fn write_user_fields(w: &mut XmlWriter, u: &User, with_tags: bool) {
    w.elem("Path", &u.path)
        .elem("UserName", &u.name)
        .elem("UserId", &u.user_id)
        .elem("Arn", &u.arn)
        .elem("CreateDate", &iso8601(u.created));
    if with_tags && !u.tags.is_empty() {
        write_tags(w, &u.tags);
    }
}

fn write_tags(w: &mut XmlWriter, tags: &[Tag]) {
    w.open("Tags");
    for t in tags {
        w.open("member")
            .elem("Key", &t.key)
            .elem("Value", &t.value)
            .close("member");
    }
    w.close("Tags");
}

/// A list call's `Marker` and `MaxItems` (100 when absent, as in IAM), checked by `v`.
fn page_params<'p>(v: &mut Validator, p: &'p Params<'_>) -> (Option<&'p str>, usize) {
    let marker = v.string("marker", p.get("Marker"), validate::MARKER, false);
    let max = v
        .integer("maxItems", p.get("MaxItems"), 1, 1000, false)
        .unwrap_or(100);
    (marker, usize::try_from(max).unwrap_or(100))
}

/// `IsTruncated`, and the `Marker` of the next page when there is one.
fn write_truncation(w: &mut XmlWriter, next_marker: Option<&str>) {
    w.elem(
        "IsTruncated",
        if next_marker.is_some() {
            "true"
        } else {
            "false"
        },
    );
    w.opt_elem("Marker", next_marker);
}

fn write_key_meta(w: &mut XmlWriter, k: &AccessKey) {
    w.opt_elem("UserName", k.user_name.as_deref())
        .elem("AccessKeyId", &k.key_id)
        .elem("Status", k.status.as_str())
        .elem("CreateDate", &iso8601(k.created));
}

/// Parses and validates `Tags.member.N.Key/Value`.
fn parse_tags(p: &Params<'_>, v: &mut Validator) -> Result<Vec<Tag>, ApiError> {
    let entries = p.list_entries("Tags").map_err(|name| {
        ApiError::new(
            400,
            "ValidationError",
            format!("1 validation error detected: Invalid list index in parameter '{name}'"),
        )
    })?;
    let mut tags: Vec<(usize, Option<String>, Option<String>)> = Vec::new();
    for (n, field, value) in entries {
        if tags.last().is_none_or(|t| t.0 != n) {
            tags.push((n, None, None));
        }
        let Some(t) = tags.last_mut() else { continue };
        match field {
            "Key" => t.1 = Some(value.to_owned()),
            "Value" => t.2 = Some(value.to_owned()),
            _ => {}
        }
    }
    v.list_len("tags", tags.len(), 50);
    let mut out = Vec::with_capacity(tags.len());
    for (n, key, value) in tags {
        v.string(
            &format!("tags.{n}.member.key"),
            key.as_deref(),
            validate::TAG_KEY,
            true,
        );
        v.string(
            &format!("tags.{n}.member.value"),
            value.as_deref(),
            validate::TAG_VALUE,
            true,
        );
        if let (Some(key), Some(value)) = (key, value) {
            out.push(Tag { key, value });
        }
    }
    Ok(out)
}

/// Refuses a key given twice (ignoring case), with IAM's code and message (LocalStack's validated
/// snapshots of CreateRole with duplicate tags); and tag keys and values that begin with `aws:`
/// (in any case): IAM reserves the prefix ("You cannot create a tag key or value that begins with
/// the text aws:", IAM User Guide, rules for tagging). The code is the `InvalidInput` the service
/// model lists for CreateUser and TagUser; AWS's exact wording was not found, so the message says
/// the rule.
fn check_tags(tags: &[Tag]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    if !tags.iter().all(|t| seen.insert(t.key.to_ascii_lowercase())) {
        return Err(ApiError::new(
            400,
            "InvalidInput",
            "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
        ));
    }
    let reserved = |s: &str| s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:"));
    match tags.iter().find(|t| reserved(&t.key) || reserved(&t.value)) {
        None => Ok(()),
        Some(t) => Err(ApiError::new(
            400,
            "InvalidInput",
            format!(
                "The tag {} '{}' begins with 'aws:', a prefix reserved for AWS use.",
                if reserved(&t.key) { "key" } else { "value" },
                if reserved(&t.key) { &t.key } else { &t.value },
            ),
        )),
    }
}

/// Runs IAM `action` for `caller`; returns the response body.
pub(crate) async fn handle(
    app: &App,
    caller: &Caller,
    action: &str,
    p: &Params<'_>,
    rid: &str,
) -> Result<String, ApiError> {
    let acct = caller.account_id();
    let store = app.store();
    let err = |e| app.store_error(e);
    let mut v = Validator::without_values();
    match action {
        "CreateUser" => {
            let name = v.string("userName", p.get("UserName"), validate::USER_NAME, true);
            let path = v
                .string("path", p.get("Path"), validate::PATH, false)
                .unwrap_or("/");
            let boundary = v.string(
                "permissionsBoundary",
                p.get("PermissionsBoundary"),
                validate::ARN,
                false,
            );
            let tags = parse_tags(p, &mut v)?;
            v.finish()?;
            check_tags(&tags)?;
            let name = name.unwrap_or_default();
            authorize_iam(
                caller,
                action,
                Some(name),
                &user_resource(acct, &format!("{}{name}", path.trim_start_matches('/'))),
            )?;
            if let Some(arn) = boundary {
                // keyward has no managed policies, so no policy can be a boundary: IAM's answer
                // for a boundary policy that does not exist.
                return Err(ApiError::new(
                    404,
                    "NoSuchEntity",
                    format!("Scope ARN: {arn} does not exist or is not attachable."),
                ));
            }
            let user = store
                .create_user(acct, name, path, &tags)
                .await
                .map_err(err)?;
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| write_user(w, &user, true)),
            ))
        }
        "GetUser" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                false,
            );
            v.finish()?;
            let target = name.or(caller.user_name());
            authorize_iam(caller, action, name, &user_named(target.unwrap_or("")))?;
            match target {
                None => {
                    // Root asking about itself.
                    let account = store
                        .get_account(acct)
                        .await
                        .map_err(err)?
                        .ok_or_else(ApiError::internal)?;
                    let arn = caller.arn();
                    Ok(envelope(
                        action,
                        IAM_NS,
                        rid,
                        Some(&|w| {
                            w.open("User")
                                .elem("UserId", acct)
                                .elem("Arn", arn)
                                .elem("CreateDate", &iso8601(account.created))
                                .close("User");
                        }),
                    ))
                }
                Some(name) => {
                    let user = store
                        .get_user(acct, name)
                        .await
                        .map_err(err)?
                        .ok_or_else(|| no_such_user(name))?;
                    Ok(envelope(
                        action,
                        IAM_NS,
                        rid,
                        Some(&|w| write_user(w, &user, true)),
                    ))
                }
            }
        }
        "ListUsers" => {
            let prefix = v
                .string(
                    "pathPrefix",
                    p.get("PathPrefix"),
                    validate::PATH_PREFIX,
                    false,
                )
                .unwrap_or("/");
            let (marker, max) = page_params(&mut v, p);
            v.finish()?;
            authorize_iam(
                caller,
                action,
                Some(""),
                &format!("arn:aws:iam::{acct}:user/"),
            )?;
            let page = store
                .list_users(acct, prefix, marker, max)
                .await
                .map_err(err)?;
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    w.open("Users");
                    for u in &page.items {
                        w.open("member");
                        write_user_fields(w, u, false);
                        w.close("member");
                    }
                    w.close("Users");
                    write_truncation(w, page.next_marker.as_deref());
                }),
            ))
        }
        "UpdateUser" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                true,
            );
            let new_path = v.string("newPath", p.get("NewPath"), validate::PATH, false);
            let new_name = v.string(
                "newUserName",
                p.get("NewUserName"),
                validate::USER_NAME,
                false,
            );
            v.finish()?;
            let name = name.unwrap_or_default();
            authorize_iam(caller, action, Some(name), &user_named(name))?;
            store
                .update_user(acct, name, new_name, new_path)
                .await
                .map_err(err)?;
            app.key_cache().evict_owner(acct, Some(name));
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "DeleteUser" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                true,
            );
            v.finish()?;
            let name = name.unwrap_or_default();
            authorize_iam(caller, action, Some(name), &user_named(name))?;
            store.delete_user(acct, name).await.map_err(err)?;
            app.key_cache().evict_owner(acct, Some(name));
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "TagUser" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                true,
            );
            if !p.has_list("Tags") {
                v.string("tags", None, validate::TAG_KEY, true);
            }
            let tags = parse_tags(p, &mut v)?;
            v.finish()?;
            check_tags(&tags)?;
            let name = name.unwrap_or_default();
            authorize_iam(caller, action, Some(name), &user_resource(acct, name))?;
            store.tag_user(acct, name, &tags).await.map_err(err)?;
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "UntagUser" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                true,
            );
            if !p.has_list("TagKeys") {
                v.string("tagKeys", None, validate::TAG_KEY, true);
            }
            let entries = p.list_entries("TagKeys").map_err(|n| {
                ApiError::new(
                    400,
                    "ValidationError",
                    format!("1 validation error detected: Invalid list index in parameter '{n}'"),
                )
            })?;
            v.list_len("tagKeys", entries.len(), 50);
            let mut keys = Vec::with_capacity(entries.len());
            let mut bad_key = false;
            for (_, _, k) in &entries {
                let mut one = Validator::without_values();
                one.string("tagKeys", Some(k), validate::TAG_KEY, true);
                bad_key |= !one.is_ok();
                keys.push((*k).to_owned());
            }
            if bad_key {
                // A list of strings: IAM reports a bad member at the list, with every constraint
                // of its members (LocalStack's validated UntagRole snapshots).
                v.custom(format!(
                    "Value at 'tagKeys' failed to satisfy constraint: Member must satisfy constraint: [Member must have length less than or equal to {}, Member must have length greater than or equal to {}, Member must satisfy regular expression pattern: {}, Member must not be null]",
                    validate::TAG_KEY.max,
                    validate::TAG_KEY.min,
                    r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+",
                ));
            }
            v.finish()?;
            let name = name.unwrap_or_default();
            authorize_iam(caller, action, Some(name), &user_resource(acct, name))?;
            store.untag_user(acct, name, &keys).await.map_err(err)?;
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "ListUserTags" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                true,
            );
            let (marker, max) = page_params(&mut v, p);
            v.finish()?;
            let name = name.unwrap_or_default();
            authorize_iam(caller, action, Some(name), &user_resource(acct, name))?;
            let page = store
                .list_user_tags_page(acct, name, marker, max)
                .await
                .map_err(err)?;
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    write_tags(w, &page.items);
                    write_truncation(w, page.next_marker.as_deref());
                }),
            ))
        }
        "CreateAccessKey" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                false,
            );
            v.finish()?;
            let owner = owner(caller, name);
            authorize_iam(caller, action, name, &user_named(owner.unwrap_or("")))?;
            let (key, secret) = store.create_access_key(acct, owner).await.map_err(err)?;
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    w.open("AccessKey");
                    w.opt_elem("UserName", key.user_name.as_deref())
                        .elem("AccessKeyId", &key.key_id)
                        .elem("Status", key.status.as_str())
                        .elem("SecretAccessKey", secret.expose())
                        .elem("CreateDate", &iso8601(key.created));
                    w.close("AccessKey");
                }),
            ))
        }
        "ListAccessKeys" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                false,
            );
            let (marker, max) = page_params(&mut v, p);
            v.finish()?;
            let owner = owner(caller, name);
            authorize_iam(caller, action, name, &user_named(owner.unwrap_or("")))?;
            let page = store
                .list_access_keys_page(acct, owner, marker, max)
                .await
                .map_err(err)?;
            let keys = &page.items;
            let user_name = owner.map(|o| {
                keys.first()
                    .and_then(|k| k.user_name.clone())
                    .unwrap_or_else(|| o.to_owned())
            });
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    w.opt_elem("UserName", user_name.as_deref());
                    w.open("AccessKeyMetadata");
                    for k in keys {
                        w.open("member");
                        write_key_meta(w, k);
                        w.close("member");
                    }
                    w.close("AccessKeyMetadata");
                    write_truncation(w, page.next_marker.as_deref());
                }),
            ))
        }
        "UpdateAccessKey" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                false,
            );
            let key_id = v.string(
                "accessKeyId",
                p.get("AccessKeyId"),
                validate::ACCESS_KEY_ID,
                true,
            );
            let status = v.enumeration(
                "status",
                p.get("Status"),
                &["Active", "Inactive", "Expired"],
                true,
            );
            v.finish()?;
            let status = match status {
                Some("Active") => KeyStatus::Active,
                Some("Inactive") => KeyStatus::Inactive,
                _ => {
                    return Err(ApiError::new(
                        400,
                        "InvalidInput",
                        "Access keys cannot be set to the Expired status.",
                    ));
                }
            };
            let owner = owner(caller, name);
            authorize_iam(caller, action, name, &user_named(owner.unwrap_or("")))?;
            let key_id = key_id.unwrap_or_default();
            store
                .update_access_key_status(acct, owner, key_id, status)
                .await
                .map_err(err)?;
            app.key_cache().evict(key_id);
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "DeleteAccessKey" => {
            let name = v.string(
                "userName",
                p.get("UserName"),
                validate::EXISTING_USER_NAME,
                false,
            );
            let key_id = v.string(
                "accessKeyId",
                p.get("AccessKeyId"),
                validate::ACCESS_KEY_ID,
                true,
            );
            v.finish()?;
            let owner = owner(caller, name);
            authorize_iam(caller, action, name, &user_named(owner.unwrap_or("")))?;
            let key_id = key_id.unwrap_or_default();
            store
                .delete_access_key(acct, owner, key_id)
                .await
                .map_err(err)?;
            app.key_cache().evict(key_id);
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "GetAccessKeyLastUsed" => {
            let key_id = v.string(
                "accessKeyId",
                p.get("AccessKeyId"),
                validate::ACCESS_KEY_ID,
                true,
            );
            v.finish()?;
            let key_id = key_id.unwrap_or_default();
            let found = store.get_access_key_last_used(key_id).await.map_err(err)?;
            let resource = format!("access key {key_id}");
            let Some((key, last)) = found.filter(|(k, _)| k.account_id == acct) else {
                // A key of no user of the account: IAM's wording for it has no colon after
                // "perform" and no reason (LocalStack's validated snapshot of this call with an
                // unknown key, 2026-02).
                return Err(ApiError::new(
                    403,
                    "AccessDenied",
                    format!(
                        "User: {} is not authorized to perform iam:GetAccessKeyLastUsed on resource: {resource}",
                        caller.arn()
                    ),
                ));
            };
            // Users may only see their own keys.
            let target = key.user_name.as_deref().unwrap_or("\u{0}root");
            if !caller.is_root() {
                authorize_iam(caller, action, Some(target), &resource)?;
            } else {
                authorize_iam(caller, action, None, &resource)?;
            }
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    w.opt_elem("UserName", key.user_name.as_deref());
                    w.open("AccessKeyLastUsed");
                    match &last {
                        Some(l) => {
                            w.elem("LastUsedDate", &iso8601(l.when))
                                .elem("ServiceName", &l.service)
                                .elem("Region", &l.region);
                        }
                        None => {
                            w.elem("ServiceName", "N/A").elem("Region", "N/A");
                        }
                    }
                    w.close("AccessKeyLastUsed");
                }),
            ))
        }
        "CreateAccountAlias" => {
            let alias = v.string(
                "accountAlias",
                p.get("AccountAlias"),
                validate::ACCOUNT_ALIAS,
                true,
            );
            v.finish()?;
            authorize_iam(caller, action, Some(""), "*")?;
            store
                .create_account_alias(acct, alias.unwrap_or_default())
                .await
                .map_err(err)?;
            Ok(envelope(action, IAM_NS, rid, None))
        }
        "ListAccountAliases" => {
            v.string("marker", p.get("Marker"), validate::MARKER, false);
            v.integer("maxItems", p.get("MaxItems"), 1, 1000, false);
            v.finish()?;
            authorize_iam(caller, action, Some(""), "*")?;
            let aliases = store.list_account_aliases(acct).await.map_err(err)?;
            Ok(envelope(
                action,
                IAM_NS,
                rid,
                Some(&|w| {
                    w.open("AccountAliases");
                    for a in &aliases {
                        w.elem("member", a);
                    }
                    w.close("AccountAliases");
                    w.elem("IsTruncated", "false");
                }),
            ))
        }
        "DeleteAccountAlias" => {
            let alias = v.string(
                "accountAlias",
                p.get("AccountAlias"),
                validate::ACCOUNT_ALIAS,
                true,
            );
            v.finish()?;
            authorize_iam(caller, action, Some(""), "*")?;
            store
                .delete_account_alias(acct, alias.unwrap_or_default())
                .await
                .map_err(err)?;
            Ok(envelope(action, IAM_NS, rid, None))
        }
        _ => Err(crate::app::invalid_action(action, crate::app::IAM_VERSION)),
    }
}

/// The owner an access-key action addresses: the named user, else the caller (root: `None`).
fn owner<'a>(caller: &'a Caller, name: Option<&'a str>) -> Option<&'a str> {
    name.or(caller.user_name())
}

fn no_such_user(name: &str) -> ApiError {
    ApiError::new(
        404,
        "NoSuchEntity",
        format!("The user with name {name} cannot be found."),
    )
}
