//! The queries both engines run verbatim.
//!
//! SQLite and PostgreSQL accept the same `$N` placeholders and the same SQL for these
//! statements, so one macro stamps the identical trait bodies onto each engine's store
//! (the only difference being the pool type). Engine-specific work (connecting,
//! migrating, locking) lives in `sqlite.rs` and `postgres.rs`.

macro_rules! impl_common_stores {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::UserStore for $store {
            async fn insert_user(&self, u: &$crate::UserRecord) -> $crate::Result<()> {
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
                    .execute(&self.pool)
                    .await;
                match res.map_err($crate::StoreError::from) {
                    Err($crate::StoreError::Conflict(_)) => Err($crate::StoreError::Conflict("username")),
                    other => other.map(|_| ()),
                }
            }

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
                sqlx::query_as::<_, $crate::rows::UserRow>($crate::rows::sql::LIST_USERS)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn set_user_disabled(
                &self,
                id: uuid::Uuid,
                disabled: bool,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let now = $crate::rows::millis(now);
                let mut tx = self.pool.begin().await?;
                let changed = sqlx::query($crate::rows::sql::SET_DISABLED)
                    .bind(id.to_string())
                    .bind(disabled)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if disabled {
                    sqlx::query($crate::rows::sql::REVOKE_USER_SESSIONS)
                        .bind(id.to_string())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(changed == 1)
            }

            async fn set_password_hash(
                &self,
                id: uuid::Uuid,
                hash: &str,
                now: time::OffsetDateTime,
            ) -> $crate::Result<bool> {
                let now = $crate::rows::millis(now);
                let mut tx = self.pool.begin().await?;
                let changed = sqlx::query($crate::rows::sql::SET_PASSWORD)
                    .bind(id.to_string())
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query($crate::rows::sql::REVOKE_USER_SESSIONS)
                    .bind(id.to_string())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(changed == 1)
            }

            async fn unlock_user(&self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let changed = sqlx::query($crate::rows::sql::UNLOCK)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(changed == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::SessionStore for $store {
            async fn insert_session(&self, s: &$crate::SessionRecord) -> $crate::Result<()> {
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
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn session_by_token_hash(&self, hash: &str) -> $crate::Result<Option<$crate::SessionRecord>> {
                sqlx::query_as::<_, $crate::rows::SessionRow>($crate::rows::sql::SESSION_BY_HASH)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn touch_session(
                &self,
                id: uuid::Uuid,
                now: time::OffsetDateTime,
                idle_expires_at: time::OffsetDateTime,
            ) -> $crate::Result<()> {
                sqlx::query($crate::rows::sql::TOUCH_SESSION)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .bind($crate::rows::millis(idle_expires_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn revoke_session(&self, id: uuid::Uuid, now: time::OffsetDateTime) -> $crate::Result<bool> {
                let changed = sqlx::query($crate::rows::sql::REVOKE_SESSION)
                    .bind(id.to_string())
                    .bind($crate::rows::millis(now))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(changed == 1)
            }
        }
    };
}

pub(crate) use impl_common_stores;
