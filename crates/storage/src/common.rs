//! The queries both engines run verbatim.
//!
//! SQLite and PostgreSQL accept the same `$N` placeholders and the same SQL for these
//! statements, so one macro stamps the identical trait bodies onto each engine (the
//! differences being the pool and transaction types and how the audit head is locked).
//! Each engine's store has a `pool` and a group-commit `writer`; its transaction type
//! provides `conn()`, `finish_commit()` and `finish_rollback()`.
//! Engine-specific work (connecting, migrating, beginning transactions) lives in
//! `sqlite.rs` and `postgres.rs`.

macro_rules! impl_common_stores {
    ($store:ty, $tx:ty, $head_lock:expr) => {
        fn fetch_rows<T: TryInto<R, Error = $crate::StoreError>, R>(rows: Vec<T>) -> $crate::Result<Vec<R>> {
            rows.into_iter().map(TryInto::try_into).collect()
        }

        #[async_trait::async_trait]
        impl $crate::UserStore for $store {
            async fn user_by_id(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::UserRecord>> {
                sqlx::query_as::<_, $crate::rows::UserRow>($crate::rows::sql::USER_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn user_by_username_key(&self, key: &str) -> $crate::Result<Option<$crate::UserRecord>> {
                sqlx::query_as::<_, $crate::rows::UserRow>($crate::rows::sql::USER_BY_KEY)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn list_users(&self) -> $crate::Result<Vec<$crate::UserRecord>> {
                fetch_rows(
                    sqlx::query_as::<_, $crate::rows::UserRow>($crate::rows::sql::LIST_USERS)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }
        }

        #[async_trait::async_trait]
        impl $crate::SessionStore for $store {
            async fn session_by_token_hash(&self, hash: &str) -> $crate::Result<Option<$crate::SessionRecord>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::rows::sql::SESSION_BY_HASH)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn session_by_id(&self, id: uuid::Uuid) -> $crate::Result<Option<$crate::SessionRecord>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::rows::sql::SESSION_BY_ID)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn live_sessions(
                &self,
                user_id: uuid::Uuid,
                now: time::OffsetDateTime,
            ) -> $crate::Result<Vec<$crate::SessionRecord>> {
                fetch_rows(
                    sqlx::query_as::<_, $crate::rows::SessionRow>($crate::rows::sql::LIVE_SESSIONS)
                        .bind(user_id.to_string())
                        .bind($crate::rows::millis(now))
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn session_changes_since(
                &self,
                since: time::OffsetDateTime,
            ) -> $crate::Result<Vec<$crate::SessionChange>> {
                let rows: Vec<(i64, String, Option<String>, i64)> =
                    sqlx::query_as($crate::rows::sql::SESSION_CHANGES_SINCE)
                        .bind($crate::rows::millis(since))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(|(seq, user, session, at)| {
                        Ok($crate::SessionChange {
                            seq,
                            user_id: $crate::rows::uuid(&user)?,
                            session_id: session.as_deref().map($crate::rows::uuid).transpose()?,
                            at: $crate::rows::from_millis(at)?,
                        })
                    })
                    .collect()
            }

            async fn touch_session(
                &self,
                id: uuid::Uuid,
                now: time::OffsetDateTime,
                idle_expires_at: time::OffsetDateTime,
            ) -> $crate::Result<()> {
                // Activity updates join the write batch, so they never contend with it for
                // the write lock (and share its flush).
                let mut tx = self.writer.begin().await?;
                sqlx::query($crate::rows::sql::TOUCH_SESSION)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .bind($crate::rows::millis(idle_expires_at))
                    .execute(tx.conn())
                    .await?;
                $crate::StoreTx::commit(Box::new(tx)).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::AuditStore for $store {
            async fn audit_after(&self, after_seq: i64, limit: i64) -> $crate::Result<Vec<$crate::AuditRow>> {
                Ok(sqlx::query_as::<_, $crate::AuditRow>($crate::rows::sql::AUDIT_AFTER)
                    .bind(after_seq)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn audit_search(&self, f: &$crate::AuditFilter, limit: i64) -> $crate::Result<Vec<$crate::AuditRow>> {
                let (exact, like) = $crate::rows::action_filter(f.action.as_deref());
                Ok(sqlx::query_as::<_, $crate::AuditRow>($crate::rows::sql::AUDIT_SEARCH)
                    .bind(f.actor.clone())
                    .bind(exact)
                    .bind(like)
                    .bind(f.outcome.clone())
                    .bind(f.since_us)
                    .bind(f.until_us)
                    .bind(f.after_seq.unwrap_or(0))
                    .bind(limit)
                    .bind(f.resource.clone())
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn audit_head(&self) -> $crate::Result<(i64, String)> {
                Ok(sqlx::query_as::<_, (i64, String)>($crate::rows::sql::AUDIT_HEAD).fetch_one(&self.pool).await?)
            }

            async fn insert_checkpoint(&self, c: &$crate::CheckpointRow) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::CHECKPOINT_INSERT)
                    .bind(c.seq)
                    .bind(&c.head_hash)
                    .bind(c.time_us)
                    .bind(&c.key_id)
                    .bind(&c.signature)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn settings_snapshot(&self) -> $crate::Result<Vec<(String, String)>> {
                Ok(sqlx::query_as::<_, (String, String)>($crate::rows::sql::SETTINGS).fetch_all(&self.pool).await?)
            }

            async fn checkpoints(&self) -> $crate::Result<Vec<$crate::CheckpointRow>> {
                Ok(sqlx::query_as::<_, $crate::CheckpointRow>($crate::rows::sql::CHECKPOINTS)
                    .fetch_all(&self.pool)
                    .await?)
            }
        }

        impl $tx {
            /// Appends to the session-change feed (and prunes rows older than an hour):
            /// `session` names one session, else every session of `user`.
            async fn note_session_change(
                &mut self,
                user: Option<&str>,
                session: Option<&str>,
                now: i64,
            ) -> $crate::Result<()> {
                match (user, session) {
                    (_, Some(id)) => {
                        sqlx::query($crate::rows::sql::NOTE_SESSION_CHANGE)
                            .bind(id)
                            .bind(now)
                            .execute(self.conn())
                            .await?;
                    }
                    (Some(id), None) => {
                        sqlx::query($crate::rows::sql::NOTE_USER_CHANGE)
                            .bind(id)
                            .bind(now)
                            .execute(self.conn())
                            .await?;
                    }
                    (None, None) => return Ok(()),
                }
                sqlx::query($crate::rows::sql::PRUNE_SESSION_CHANGES)
                    .bind(now - 3_600_000)
                    .execute(self.conn())
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::StoreTx for $tx {
            async fn insert_user(&mut self, u: &$crate::UserRecord) -> $crate::Result<()> {
                let res = sqlx::query($crate::rows::sql::INSERT_USER)
                    .bind(u.id.to_string())
                    .bind(&u.username)
                    .bind(&u.username_key)
                    .bind(&u.password_hash)
                    .bind($crate::rows::roles_json(&u.roles))
                    .bind(u.disabled)
                    .bind(u.failed_logins)
                    .bind(u.locked_until.map($crate::rows::millis))
                    .bind($crate::rows::millis(u.created_at))
                    .bind($crate::rows::millis(u.updated_at))
                    .execute(self.conn())
                    .await;
                match res.map_err($crate::StoreError::from) {
                    Err($crate::StoreError::Conflict(_)) => Err($crate::StoreError::Conflict("username")),
                    other => other.map(|_| ()),
                }
            }

            async fn set_user_disabled(
                &mut self,
                id: uuid::Uuid,
                disabled: bool,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let now = $crate::rows::millis(now);
                let changed = sqlx::query($crate::rows::sql::SET_DISABLED)
                    .bind(id.to_string())
                    .bind(disabled)
                    .bind(now)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if disabled {
                    sqlx::query($crate::rows::sql::REVOKE_USER_SESSIONS)
                        .bind(id.to_string())
                        .bind(now)
                        .execute(self.conn())
                        .await?;
                }
                self.note_session_change(Some(&id.to_string()), None, now).await?;
                Ok(changed == 1)
            }

            async fn set_password_hash(
                &mut self,
                id: uuid::Uuid,
                hash: &str,
                keep: Option<uuid::Uuid>,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let now = $crate::rows::millis(now);
                let changed = sqlx::query($crate::rows::sql::SET_PASSWORD)
                    .bind(id.to_string())
                    .bind(hash)
                    .bind(now)
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                sqlx::query($crate::rows::sql::REVOKE_OTHER_SESSIONS)
                    .bind(id.to_string())
                    .bind(now)
                    .bind(keep.map(|k| k.to_string()).unwrap_or_default())
                    .execute(self.conn())
                    .await?;
                self.note_session_change(Some(&id.to_string()), None, now).await?;
                Ok(changed == 1)
            }

            async fn unlock_user(&mut self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let changed = sqlx::query($crate::rows::sql::UNLOCK)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                Ok(changed == 1)
            }

            async fn rehash_password(&mut self, id: uuid::Uuid, hash: &str) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::REHASH).bind(id.to_string()).bind(hash).execute(self.conn()).await?;
                Ok(())
            }

            async fn set_user_roles(
                &mut self,
                id: uuid::Uuid,
                roles: &[String],
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let changed = sqlx::query($crate::rows::sql::SET_ROLES)
                    .bind(id.to_string())
                    .bind($crate::rows::roles_json(roles))
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                self.note_session_change(Some(&id.to_string()), None, $crate::rows::millis(now)).await?;
                Ok(changed == 1)
            }

            async fn record_login_failure(
                &mut self,
                id: uuid::Uuid,
                lock_for: &(dyn Fn(i64) -> Option<time::OffsetDateTime> + Send + Sync),
            ) -> $crate::Result<i64> {
                let count: i64 = sqlx::query_scalar($crate::rows::sql::COUNT_FAILURE)
                    .bind(id.to_string())
                    .fetch_one(self.conn())
                    .await?;
                sqlx::query($crate::rows::sql::SET_LOCK)
                    .bind(id.to_string())
                    .bind(lock_for(count).map($crate::rows::millis))
                    .execute(self.conn())
                    .await?;
                Ok(count)
            }

            async fn insert_session(&mut self, s: &$crate::SessionRecord) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::INSERT_SESSION)
                    .bind(s.id.to_string())
                    .bind(&s.token_hash)
                    .bind(s.user_id.to_string())
                    .bind($crate::rows::millis(s.created_at))
                    .bind($crate::rows::millis(s.last_seen_at))
                    .bind($crate::rows::millis(s.idle_expires_at))
                    .bind($crate::rows::millis(s.expires_at))
                    .bind(s.revoked_at.map($crate::rows::millis))
                    .bind(&s.ip)
                    .bind(&s.user_agent)
                    .bind(&s.assumed_role)
                    .bind(s.parent_session_id.map(|p| p.to_string()))
                    .bind(s.mfa_at.map($crate::rows::millis))
                    .bind(&s.session_policy)
                    .execute(self.conn())
                    .await?;
                Ok(())
            }

            async fn revoke_session(&mut self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let changed = sqlx::query($crate::rows::sql::REVOKE_SESSION)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(self.conn())
                    .await?
                    .rows_affected();
                if changed == 1 {
                    self.note_session_change(None, Some(&id.to_string()), $crate::rows::millis(now)).await?;
                }
                Ok(changed == 1)
            }

            async fn append_audit(&mut self, seal: $crate::Sealer<'_>) -> $crate::Result<$crate::AuditRow> {
                // Read once per physical transaction (see `group_commit`), then kept in memory.
                let (seq, prev): (i64, String) = match self.audit_head() {
                    Some(head) => head,
                    None => {
                        let (seq, hash): (i64, String) = sqlx::query_as($head_lock).fetch_one(self.conn()).await?;
                        self.set_audit_head(seq, hash.clone(), false);
                        (seq, hash)
                    }
                };
                let row = seal(seq + 1, &prev);
                if row.seq != seq + 1 || row.prev_hash != prev {
                    return Err($crate::StoreError::Corrupt("sealer ignored the chain position".into()));
                }
                sqlx::query($crate::rows::sql::AUDIT_INSERT)
                    .bind(row.seq)
                    .bind(&row.id)
                    .bind(row.time_us)
                    .bind(&row.actor_user_id)
                    .bind(&row.actor_username)
                    .bind(&row.actor_session_id)
                    .bind(&row.via)
                    .bind(&row.action)
                    .bind(&row.resource)
                    .bind(&row.outcome)
                    .bind(&row.ip)
                    .bind(&row.user_agent)
                    .bind(row.mfa)
                    .bind(&row.reason)
                    .bind(&row.details)
                    .bind(&row.prev_hash)
                    .bind(&row.hash)
                    .execute(self.conn())
                    .await?;
                // The `audit_head` row is written once, before the physical commit.
                self.set_audit_head(row.seq, row.hash.clone(), true);
                Ok(row)
            }

            async fn put_setting(&mut self, key: &str, value: &str) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::PUT_SETTING).bind(key).bind(value).execute(self.conn()).await?;
                Ok(())
            }

            async fn commit(self: Box<Self>) -> $crate::Result<()> {
                self.finish_commit().await
            }

            async fn rollback(self: Box<Self>) -> $crate::Result<()> {
                self.finish_rollback().await
            }
        }
    };
}

pub(crate) use impl_common_stores;
