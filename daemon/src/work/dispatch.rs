//! Admitting a round's packet: [`evaluate_dispatch`] with the owner as the only trusted approver,
//! and for a paid rung a signed approval receipt from the owner (at once for a pre-approved rung,
//! after `btd approve-spend` otherwise), asked for until a deadline.

use std::time::Duration;

use btd_protocol::dispatch::{
    evaluate_dispatch, Action, ComputePacket, DispatchInput, DispatchResult,
};
use btd_protocol::wire::ApprovalResponse;
use tokio::sync::mpsc;

use crate::node::NodeError;

use super::{Loop, WorkEvent};

/// Pause between two questions to the owner about a pending spend request.
const APPROVAL_POLL: Duration = Duration::from_secs(2);

impl Loop {
    /// Dispatch, getting a receipt from the owner when the rung is paid.
    pub(super) async fn admit(
        &mut self,
        round: u64,
        packet: &ComputePacket,
        events: &mpsc::Sender<WorkEvent>,
    ) -> Result<DispatchResult, String> {
        let mut asked_owner = false;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.opts.approval_wait_secs.max(1));
        let mut announced = false;
        loop {
            let trusted = [self.owner.to_base58()];
            let verdict = evaluate_dispatch(&DispatchInput {
                decision: &self.program.decision(),
                rung: &self.rung,
                policy: &self.program.policy,
                packet,
                point: None,
                approval: self.approval.as_ref(),
                trusted_approvers: &trusted,
                spent_total: self.spent_total,
                now: self.ctx.node.now(),
            });
            // A paid run always links a receipt: a pre-approved rung gets one from the owner too.
            let need_receipt = match verdict.action {
                Action::RequestPaidApproval => true,
                Action::RunPaid => !self.receipt_valid(packet),
                _ => false,
            };
            if !need_receipt || (asked_owner && verdict.action == Action::RunPaid) {
                let _ = events
                    .send(WorkEvent::Dispatch {
                        round,
                        packet_id: packet.id.clone(),
                        action: verdict.action,
                        detail: verdict.detail.clone(),
                    })
                    .await;
                return Ok(verdict);
            }
            if self.ctx.cancelled() {
                return Err("the daemon is stopping".into());
            }
            let program = self.id;
            let p = packet.clone();
            let answer = match self.ctx.node.request_spend(program, p).await {
                Err(NodeError::Stopped) => return Err("the daemon is stopping".into()),
                other => other,
            };
            asked_owner = true;
            match answer {
                Ok(ApprovalResponse::Granted(r)) => {
                    self.approval = Some(r);
                    continue;
                }
                Ok(ApprovalResponse::Denied { reason }) => {
                    return Err(format!(
                        "the owner denied paid compute for {}: {reason}",
                        packet.id
                    ));
                }
                Ok(ApprovalResponse::Pending) => {
                    if !announced {
                        announced = true;
                        let _ = events
                            .send(WorkEvent::AwaitingApproval {
                                round,
                                packet_id: packet.id.clone(),
                                member: self.member.clone(),
                            })
                            .await;
                    }
                }
                Ok(ApprovalResponse::Error(e)) => {
                    return Err(format!(
                        "the owner refused the spend request: {}",
                        e.message
                    ));
                }
                // The owner may be briefly unreachable: keep asking until the deadline.
                Err(e) => tracing::debug!(error = %e, "spend request failed; retrying"),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "no decision on paid compute for {} within {} s; the owner approves with \
                     `btd approve-spend {} {} --member {}`",
                    packet.id, self.opts.approval_wait_secs, self.id, packet.id, self.member
                ));
            }
            tokio::time::sleep(APPROVAL_POLL).await;
        }
    }

    /// Whether the loop's approval receipt authorizes `packet` on this rung now.
    fn receipt_valid(&self, packet: &ComputePacket) -> bool {
        let trusted = [self.owner.to_base58()];
        self.approval.as_ref().is_some_and(|r| {
            r.authorizes(&packet.id, &self.rung.id, &trusted, self.ctx.node.now())
                .is_ok()
        })
    }
}
