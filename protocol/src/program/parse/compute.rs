//! `[[rungs]]` and `[policy]`: the compute a program admits and how it may spend.

// The parser's context, field readers, limits and the program types.
use super::*;

pub(super) fn rungs(ctx: &mut Ctx<'_>, path: &Path, v: &Value) -> Option<Vec<Rung>> {
    let Value::Array(items) = v else {
        ctx.err(
            path,
            format!(
                "expected an array of tables ([[rungs]]), found {}",
                type_name(v)
            ),
        );
        return None;
    };
    if items.is_empty() || items.len() > MAX_RUNGS {
        ctx.err(path, format!("declare 1 to {MAX_RUNGS} rungs"));
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(t) = as_table(ctx, &p, item) else {
            ok = false;
            continue;
        };
        match rung(ctx, &p, t) {
            Some(r) if !seen.insert(r.id.clone()) => {
                ctx.err(
                    &p.key("id"),
                    format!("rung id {:?} is declared twice", r.id),
                );
                ok = false;
            }
            Some(r) => out.push(r),
            None => ok = false,
        }
    }
    if ok && !out.iter().any(|r| r.admitted) {
        ctx.err(
            path,
            "no rung is admitted: set admitted = true on at least one",
        );
        ok = false;
    }
    ok.then_some(out)
}

fn rung(ctx: &mut Ctx<'_>, path: &Path, t: &Table) -> Option<Rung> {
    unknown_keys(
        ctx,
        path,
        t,
        &["id", "label", "spend_class", "hardware", "admitted"],
    );
    let id = required(ctx, path, t, "id").and_then(|v| ident(ctx, &path.key("id"), v));
    let label = match t.get("label") {
        None => id.clone(),
        Some(v) => text(ctx, &path.key("label"), v, 256),
    };
    let spend_class = required(ctx, path, t, "spend_class").and_then(|v| {
        as_enum(
            ctx,
            &path.key("spend_class"),
            v,
            &[
                ("local_unmetered", SpendClass::LocalUnmetered),
                ("paid_metered", SpendClass::PaidMetered),
            ],
        )
    });
    let hardware = required(ctx, path, t, "hardware").and_then(|v| {
        as_enum(
            ctx,
            &path.key("hardware"),
            v,
            &[
                ("cpu", HardwareClass::Cpu),
                ("rtx4090", HardwareClass::Rtx4090),
                ("gb10", HardwareClass::Gb10),
                ("h100", HardwareClass::H100),
                ("other_gpu", HardwareClass::OtherGpu),
            ],
        )
    });
    let admitted = match t.get("admitted") {
        None => Some(true),
        Some(v) => as_bool(ctx, &path.key("admitted"), v),
    };
    Some(Rung {
        id: id?,
        label: label?,
        spend_class: spend_class?,
        admitted: admitted?,
        hardware: hardware?,
    })
}

pub(super) fn default_policy() -> Policy {
    Policy {
        local: LocalPolicy {
            default_action: LocalAction::Allow,
        },
        paid: PaidPolicy {
            default_action: PaidAction::RequireExplicitApproval,
            approved_rungs: Vec::new(),
            max_spend_per_packet: None,
            max_total_spend: None,
        },
    }
}

pub(super) fn policy(
    ctx: &mut Ctx<'_>,
    path: &Path,
    t: &Table,
    rungs: Option<&[Rung]>,
) -> Option<Policy> {
    unknown_keys(ctx, path, t, &["local", "paid"]);
    let mut policy = default_policy();
    let mut ok = true;
    if let Some(v) = t.get("local") {
        let p = path.key("local");
        if let Some(lt) = as_table(ctx, &p, v) {
            unknown_keys(ctx, &p, lt, &["default_action"]);
            if let Some(a) = lt.get("default_action") {
                match as_enum(
                    ctx,
                    &p.key("default_action"),
                    a,
                    &[("allow", LocalAction::Allow), ("deny", LocalAction::Deny)],
                ) {
                    Some(a) => policy.local.default_action = a,
                    None => ok = false,
                }
            }
        } else {
            ok = false;
        }
    }
    if let Some(v) = t.get("paid") {
        let p = path.key("paid");
        if let Some(pt) = as_table(ctx, &p, v) {
            unknown_keys(
                ctx,
                &p,
                pt,
                &[
                    "default_action",
                    "approved_rungs",
                    "max_spend_per_packet",
                    "max_total_spend",
                ],
            );
            if let Some(a) = pt.get("default_action") {
                match as_enum(
                    ctx,
                    &p.key("default_action"),
                    a,
                    &[
                        (
                            "require_explicit_approval",
                            PaidAction::RequireExplicitApproval,
                        ),
                        ("deny", PaidAction::Deny),
                    ],
                ) {
                    Some(a) => policy.paid.default_action = a,
                    None => ok = false,
                }
            }
            if let Some(a) = pt.get("approved_rungs") {
                let ap = p.key("approved_rungs");
                match ident_list(ctx, &ap, a, MAX_RUNGS) {
                    Some(list) => {
                        if let Some(rungs) = rungs {
                            for (i, id) in list.iter().enumerate() {
                                match rungs.iter().find(|r| &r.id == id) {
                                    None => {
                                        ctx.err(
                                            &ap.index(i),
                                            format!("{id:?} is not a declared rung"),
                                        );
                                        ok = false;
                                    }
                                    Some(r) if r.spend_class != SpendClass::PaidMetered => {
                                        ctx.err(
                                            &ap.index(i),
                                            format!(
                                                "{id:?} is local_unmetered; only paid_metered rungs need approval"
                                            ),
                                        );
                                        ok = false;
                                    }
                                    Some(_) => {}
                                }
                            }
                        }
                        policy.paid.approved_rungs = list;
                    }
                    None => ok = false,
                }
            }
            for (key, slot) in [
                (
                    "max_spend_per_packet",
                    &mut policy.paid.max_spend_per_packet,
                ),
                ("max_total_spend", &mut policy.paid.max_total_spend),
            ] {
                if let Some(v) = pt.get(key) {
                    let kp = p.key(key);
                    match as_f64(ctx, &kp, v) {
                        Some(f) if f >= 0.0 => *slot = Some(f),
                        Some(f) => {
                            ctx.err(&kp, format!("must be >= 0, got {f}"));
                            ok = false;
                        }
                        None => ok = false,
                    }
                }
            }
        } else {
            ok = false;
        }
    }
    ok.then_some(policy)
}
